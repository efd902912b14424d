"""Pluggable ONNX detectors: a tiny synthetic model described by a model card.

The model is built here with ``onnx.helper``: input ``audio`` float32
``[batch, 32000]`` (a 2 s window), output ``scores`` float32 ``[batch, 2]`` =
``[mean(x), 100 * mean(x^2)]``, so column 1 (the "bona fide" score) is the
window's power and every score can be checked against numpy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import BONAFIDE_UTT, la_clip

from spoofwatch.cli import main
from spoofwatch.errors import ConfigError, InputError, ModelError
from spoofwatch.model.card import load_card
from spoofwatch.model.detector import Detector
from spoofwatch.model.scorers import build_scorer, preflight

WINDOW = 32_000
POWER_SCALE = 100.0


def _tiny_model(
    path: Path, window: int | str = WINDOW, vector_output: bool = False, batch: int | str = "batch"
) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, [batch, window])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [POWER_SCALE])
    nodes = [
        helper.make_node("Mul", ["audio", "audio"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["power"], keepdims=1),  # (B, 1)
        helper.make_node("Mul", ["power", "scale"], ["scaled"]),
        helper.make_node("ReduceMean", ["audio", "axes"], ["mean"], keepdims=1),  # (B, 1)
    ]
    if vector_output:
        axes0 = helper.make_tensor("axes_sq", TensorProto.INT64, [1], [1])
        nodes.append(helper.make_node("Squeeze", ["scaled", "axes_sq"], ["scores"]))  # (B,)
        out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])
        inits = [axes, scale, axes0]
    else:
        nodes.append(helper.make_node("Concat", ["mean", "scaled"], ["scores"], axis=1))  # (B, 2)
        out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])
        inits = [axes, scale]
    graph = helper.make_graph(nodes, "tiny_power", [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _card(tmp_path: Path, name: str = "card.toml", **fields: object) -> Path:
    model = {
        "onnx": "tiny.onnx",
        "sample_rate_hz": 16000,
        "window_samples": WINDOW,
        "input": "audio",
        "output": "scores",
        "bonafide_index": 1,
        "higher_is_bonafide": True,
    }
    model.update(fields)
    lines = ["[model]"]
    for key, value in model.items():
        if value is None:
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


@pytest.fixture
def card(tmp_path: Path) -> Path:
    _tiny_model(tmp_path / "tiny.onnx")
    return _card(tmp_path)


def _power(windows: np.ndarray) -> np.ndarray:
    return POWER_SCALE * np.mean(windows.astype(np.float64) ** 2, axis=1)


def test_card_scores_match_numpy_and_windows_are_two_seconds(card: Path) -> None:
    scorer = build_scorer(str(card), device="cpu", max_batch_windows=3)
    assert scorer.window_samples == WINDOW
    rng = np.random.default_rng(1)
    windows = (rng.standard_normal((7, WINDOW)) * np.linspace(0.01, 0.5, 7)[:, None]).astype(np.float32)
    np.testing.assert_allclose(scorer.scores(windows), _power(windows), rtol=1e-4)
    assert scorer.calls == 3  # 7 windows, cap 3
    with pytest.raises(InputError, match=r"expected shape \(batch, 32000\)"):
        scorer.scores(np.zeros((1, 64600), np.float32))


def test_card_negated_and_vector_outputs(tmp_path: Path) -> None:
    _tiny_model(tmp_path / "tiny.onnx")
    _tiny_model(tmp_path / "vec.onnx", vector_output=True)
    neg = build_scorer(str(_card(tmp_path, "neg.toml", higher_is_bonafide=False)), device="cpu")
    vec = build_scorer(str(_card(tmp_path, "vec.toml", onnx="vec.onnx", bonafide_index=None)), device="cpu")
    windows = np.full((2, WINDOW), 0.1, np.float32)
    np.testing.assert_allclose(neg.scores(windows), -_power(windows), rtol=1e-4)
    np.testing.assert_allclose(vec.scores(windows), _power(windows), rtol=1e-4)


def test_card_sha256_is_checked(tmp_path: Path) -> None:
    onnx_path = _tiny_model(tmp_path / "tiny.onnx")
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert load_card(_card(tmp_path, "ok.toml", sha256=digest)).sha256 == digest
    with pytest.raises(ModelError, match="the card pins"):
        load_card(_card(tmp_path, "bad.toml", sha256="0" * 64))
    # Copied with spaces around it: still the right hash.
    assert load_card(_card(tmp_path, "spaced.toml", sha256=f" {digest.upper()} ")).sha256 == digest


def test_a_card_pin_and_calibration_key_cover_external_weights(tmp_path: Path) -> None:
    """torch.onnx.export writes a model's weights beside the graph (external
    data) by default: the pin and the calibration key covered only the graph,
    so weights changed under a pinned card were scored silently."""
    import onnx
    from onnx import numpy_helper

    onnx_path = _tiny_model(tmp_path / "tiny.onnx")
    model = onnx.load(str(onnx_path))
    # The scale as raw bytes, which external data holds (the axes stay inline: shape inference reads them).
    scale = next(t for t in model.graph.initializer if t.name == "scale")
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale), "scale"))
    onnx.save_model(
        model, str(onnx_path), save_as_external_data=True, location="tiny.onnx.data", size_threshold=0
    )
    data = tmp_path / "tiny.onnx.data"
    assert data.is_file()
    spec = load_card(_card(tmp_path, "card.toml"))
    assert spec.sha256 != hashlib.sha256(onnx_path.read_bytes()).hexdigest()  # not the graph's alone
    pinned = _card(tmp_path, "pinned.toml", sha256=spec.sha256)
    windows = np.full((1, WINDOW), 0.1, np.float32)
    before = build_scorer(str(pinned), device="cpu").scores(windows)
    np.testing.assert_allclose(before, _power(windows), rtol=1e-4)

    # The same graph file, the power scale (an external weight) changed from 100 to 200.
    loaded = onnx.load(str(onnx_path))
    scale = next(t for t in loaded.graph.initializer if t.name == "scale")
    scale.CopyFrom(numpy_helper.from_array(np.array(2 * POWER_SCALE, np.float32), "scale"))
    graph_bytes = onnx_path.read_bytes()
    onnx.save_model(
        loaded, str(onnx_path), save_as_external_data=True, location="tiny.onnx.data", size_threshold=0
    )
    onnx_path.write_bytes(graph_bytes)  # the graph file as it was: only the weights differ
    with pytest.raises(ModelError, match="the card pins"):
        load_card(pinned)
    assert load_card(_card(tmp_path, "card.toml")).calibration_key != spec.calibration_key
    data.unlink()
    with pytest.raises(ModelError, match=r"keeps its weights in tiny\.onnx\.data, which does not exist"):
        load_card(_card(tmp_path, "card.toml"))


def test_a_graph_without_external_data_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash pass finds whether a graph names external data at all: a large
    graph that keeps its weights inside is not parsed a second time for it."""
    import onnx

    from spoofwatch.model.card import _sha256_and_mentions

    onnx_path = _tiny_model(tmp_path / "tiny.onnx")

    def no_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed a graph without external data")

    monkeypatch.setattr(onnx, "load", no_parse)
    assert load_card(_card(tmp_path)).sha256 == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    block = 1 << 20  # the hash pass's read size: a mention across two reads is found too
    for offset in (0, block - 4, block - 8, block, 3 * block - 1):
        data = tmp_path / f"at{offset}"
        data.write_bytes(b"x" * offset + b"location" + b"y" * 10)
        assert _sha256_and_mentions(data, b"location") == (
            hashlib.sha256(data.read_bytes()).hexdigest(),
            True,
        )
    data.write_bytes(b"x" * (block - 4) + b"locat" + b"y" * block + b"ion")
    assert not _sha256_and_mentions(data, b"location")[1]


def test_card_paths_that_are_folders_or_not_onnx_fail_naming_the_card(tmp_path: Path) -> None:
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ModelError, match=r"card\.toml: onnx = 'folder\.onnx' is a folder"):
        load_card(_card(tmp_path, onnx="folder.onnx"))
    (tmp_path / "text.onnx").write_text("not a model")
    with pytest.raises(
        ModelError,
        match=r"card\.toml: \S*text\.onnx: ONNX Runtime cannot open the model: .*Protobuf parsing failed",
    ):
        load_card(_card(tmp_path, onnx="text.onnx"))
    _tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "cal").mkdir()
    with pytest.raises(ConfigError, match=r"calibration = 'cal' is a folder"):
        load_card(_card(tmp_path, calibration="cal"))


@pytest.mark.parametrize(
    ("fields", "model_kw", "error", "message"),
    [
        ({"onnx": "missing.onnx"}, {}, ModelError, "does not exist"),
        ({"input": "waveform"}, {}, ModelError, "input = 'waveform', but tiny.onnx has input"),
        ({"output": "logits"}, {}, ModelError, "output = 'logits', but tiny.onnx has output"),
        ({"window_samples": 16000}, {}, ModelError, r"expected tensor\(float\) \[batch, 16000\]"),
        (
            {"window_samples": 16000, "input": "audio_in"},
            {"window": "n"},
            ModelError,
            r"a probe call with float32 \[1, 16000\] failed",
        ),
        ({}, {"batch": 1}, ModelError, "has a fixed batch of 1; expected a dynamic batch axis"),
        ({}, {"batch": 2}, ModelError, "has a fixed batch of 2; expected a dynamic batch axis"),
        ({"bonafide_index": 2}, {}, ModelError, r"expected bonafide_index in 0..1"),
        ({"bonafide_index": None}, {}, ModelError, r"expected bonafide_index in 0..1"),
        ({"sample_rate_hz": 8000}, {}, ConfigError, "sample_rate_hz = 8000"),
        ({"window_samples": 10}, {}, ConfigError, "window_samples = 10"),
        ({"higher_is_bonafide": "yes"}, {}, ConfigError, "higher_is_bonafide: expected bool"),
        ({"input": None}, {}, ConfigError, r"missing \[model\] field\(s\) input"),
        ({"colour": "red"}, {}, ConfigError, r"unknown \[model\] field\(s\) colour"),
    ],
)
def test_bad_cards_fail_clearly(
    tmp_path: Path, fields: dict[str, object], model_kw: dict[str, object], error: type, message: str
) -> None:
    if model_kw.get("window") == "n":
        # A model whose input length is dynamic but whose maths needs 32000
        # cannot be caught by the declared shape: the probe call must catch it.
        _tiny_model(tmp_path / "tiny.onnx")
        _reshape_needs_window(tmp_path / "tiny.onnx")
    else:
        _tiny_model(tmp_path / "tiny.onnx", batch=model_kw.get("batch", "batch"))  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        load_card(_card(tmp_path, **fields))


def test_a_card_without_its_model_table_says_so(card: Path) -> None:
    """It listed the fields as if they were tables: "got ['bonafide_index', ...]"."""
    text = card.read_text()
    card.write_text(text.replace("[model]\n", ""))
    with pytest.raises(
        ConfigError, match=r"got keys outside any table \['bonafide_index', .*a missing \[model\] line"
    ):
        load_card(card)
    card.write_text(text + "[extra]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"got tables \['extra', 'model'\]$"):
        load_card(card)


def _reshape_needs_window(path: Path) -> None:
    """Rewrite the tiny model so its input is dynamic but a Reshape needs 32000 samples."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    dim = model.graph.input[0].type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "samples"
    shape = helper.make_tensor("fixed", TensorProto.INT64, [2], [-1, WINDOW])
    model.graph.initializer.append(shape)
    model.graph.node.insert(0, helper.make_node("Reshape", ["audio_in", "fixed"], ["audio"]))
    model.graph.input[0].name = "audio_in"
    onnx.save(model, str(path))


def test_card_not_a_file_and_precision_refused(tmp_path: Path, card: Path) -> None:
    with pytest.raises(ConfigError, match="neither a built-in model"):
        build_scorer(str(tmp_path / "nope.toml"), device="cpu")
    with pytest.raises(InputError, match="a model card describes one ONNX file"):
        build_scorer(str(card), precision="int8", device="cpu")
    # The checks before audio is read are the same (preflight let --weights through).
    with pytest.raises(InputError, match="a model card describes one ONNX file"):
        preflight(str(card), "int8", "cpu")
    with pytest.raises(InputError, match="--weights applies to the built-in models"):
        preflight(str(card), "fp32", "cpu", tmp_path / "w.pth")


def test_detector_windows_follow_the_card(card: Path, la_dir: Path) -> None:
    detector = Detector.load(str(card), device="cpu")
    # No calibration: the shipped uncalibrated card default, stamped with the card.
    assert detector.threshold == 0.0 and detector.calibration.model == "card"
    assert detector.calibration.weights_sha256 == load_card(card).calibration_key
    audio = np.concatenate([np.full(WINDOW, 0.1, np.float32), np.full(WINDOW, 0.2, np.float32)])
    result = detector.score_audio(audio, hop_s=1.0)
    assert [(w.start_s, w.end_s) for w in result.windows] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    assert [round(w.score, 3) for w in result.windows] == [1.0, 2.5, 4.0]
    assert detector.live.window_samples == WINDOW


def test_cli_score_and_stream_with_a_card(
    card: Path, la_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = la_clip(la_dir, BONAFIDE_UTT)
    audio, rate = soundfile.read(str(clip), dtype="float32")
    assert rate == 16000
    assert main(["score", "--model", str(card), "--device", "cpu", "--json", str(clip)]) == 0
    row = json.loads(capsys.readouterr().out)
    first = audio[:WINDOW] if audio.size >= WINDOW else np.tile(audio, 2 * WINDOW // audio.size)[:WINDOW]
    assert row["windows"][0]["end_s"] == pytest.approx(min(2.0, audio.size / 16000))
    assert row["windows"][0]["score"] == pytest.approx(float(_power(first[None, :])[0]), rel=1e-4)
    assert main(["stream", "--model", str(card), "--device", "cpu", "--json", str(clip)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    scores = [e for e in events if e["type"] == "score"]
    assert scores and all(abs(e["t_end"] - e["t_start"] - 2.0) < 1e-9 for e in scores)
    assert events[-1]["type"] == "summary"


def test_card_calibration_must_match_the_card(
    card: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from spoofwatch.calibration.calfile import load_calibration, save_calibration

    base = load_calibration(None, model="aasist-l")
    spec = load_card(card)
    good = dataclasses.replace(
        base, model=spec.name, weights_sha256=spec.calibration_key, verdict_threshold=0.7
    )
    save_calibration(good, tmp_path / "good.toml")
    detector = Detector.load(str(card), device="cpu", calibration=tmp_path / "good.toml")
    assert detector.threshold == 0.7 and detector.live.window_samples == WINDOW
    save_calibration(base, tmp_path / "official.toml")
    missing = tmp_path / "nothing.wav"  # never read: the calibration is refused first
    assert (
        main(["score", "--model", str(card), "--calibration", str(tmp_path / "official.toml"), str(missing)])
        == 8
    )
    assert "calibration was made for model 'aasist-l'" in capsys.readouterr().err


def _sqrt_model(path: Path) -> Path:
    """Output ``sqrt(mean(x))``, shape [batch]: NaN for a window whose mean is
    negative, the way a broken or badly exported model can fail."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", WINDOW])
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    nodes = [
        helper.make_node("ReduceMean", ["audio", "axes"], ["mean"], keepdims=0),  # (B,)
        helper.make_node("Sqrt", ["mean"], ["scores"]),
    ]
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"])
    model = helper.make_model(
        helper.make_graph(nodes, "tiny_sqrt", [x], [out], [axes]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _offset_speech(la_dir: Path, tmp_path: Path, offsets: list[float]) -> Path:
    """Real speech, each part shifted by one DC offset (the sign of a window's mean)."""
    speech = np.tile(soundfile.read(str(la_clip(la_dir, BONAFIDE_UTT)), dtype="float32")[0], 3)[: 4 * 16000]
    path = tmp_path / f"offset{len(offsets)}.wav"
    soundfile.write(path, np.concatenate([speech + np.float32(o) for o in offsets]), 16000)
    return path


def test_non_finite_model_scores_never_reach_an_event(
    tmp_path: Path, la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``score``: the file is reported and the next one still scored; ``stream``:
    the window counts as dropped and every event stays finite, ending with the
    summary."""
    _sqrt_model(tmp_path / "sqrt.onnx")
    card = _card(tmp_path, "sqrt.toml", onnx="sqrt.onnx", bonafide_index=None)
    negative = _offset_speech(la_dir, tmp_path, [-0.05])
    mixed = _offset_speech(la_dir, tmp_path, [0.05, -0.05])
    positive = tmp_path / "positive.wav"
    soundfile.write(positive, soundfile.read(str(mixed), dtype="float32")[0][: 4 * 16000], 16000)

    assert (
        main(["score", "--model", str(card), "--device", "cpu", "--json", str(negative), str(positive)]) == 1
    )
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert (
        rows[0]["file"] == str(negative) and "non-finite score (nan) for the window 0-2 s" in rows[0]["error"]
    )
    assert rows[1]["score"] == pytest.approx(np.sqrt(0.05), rel=0.05)  # the next file is scored

    assert main(["stream", "--model", str(card), "--device", "cpu", "--json", str(mixed)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    scores = [e for e in events if e["type"] == "score"]
    scored = [e["score"] for e in scores if e["score"] is not None]
    failed = [e for e in scores if e["score"] is None and e["speech"]]
    assert scored and failed and all(np.isfinite(scored))
    assert all(e["smoothed"] is None or np.isfinite(e["smoothed"]) for e in scores)
    summary = events[-1]
    assert summary["type"] == "summary" and summary["dropped_windows"] >= len(failed)
    assert summary["scored_windows"] == len(scored)


def test_a_card_window_shorter_than_the_hop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Uncalibrated, a card hops one window when its window is shorter than the
    shipped default's 0.5 s hop (which was refused, and written on by `calibrate
    fit`, so that no command could use the card live); a calibration whose hop
    is longer than the window is still refused before streaming."""
    import dataclasses

    from spoofwatch.calibration.calfile import save_calibration
    from spoofwatch.model.detector import _card_calibration

    _tiny_model(tmp_path / "short.onnx", window=4000)
    card = _card(tmp_path, "short.toml", onnx="short.onnx", window_samples=4000)  # 0.25 s < the 0.5 s hop
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, 0.1 * np.ones(16000, np.float32), 16000)
    assert main(["stream", "--model", str(card), "--device", "cpu", "--json", str(wav)]) == 0
    ends = [json.loads(line)["t_end"] for line in capsys.readouterr().out.splitlines() if '"score"' in line]
    assert ends == pytest.approx([0.25, 0.5, 0.75, 1.0])

    default = _card_calibration(load_card(card), None, warn=False)
    assert default.stream.hop_s == 0.25
    long_hop = tmp_path / "long-hop.toml"
    save_calibration(
        dataclasses.replace(default, stream=dataclasses.replace(default.stream, hop_s=0.5)), long_hop
    )
    expected = "hop_s: expected at most the model's window (4000 samples = 0.25 s), got 0.5"
    for command in (["stream", str(wav)], ["serve", "--port", "0"]):
        args = [*command, "--model", str(card), "--device", "cpu", "--calibration", str(long_hop)]
        assert main(args) == InputError.exit_code
        assert expected in capsys.readouterr().err


def test_score_hops_one_window_for_a_card_shorter_than_the_file_hop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default file hop (1 s) is longer than a 0.5 s card window: `score` then hops one
    window (no audio left unscored, and no refusal of a hop the user never gave)."""
    _tiny_model(tmp_path / "half.onnx", window=8000)
    card = _card(tmp_path, "half.toml", onnx="half.onnx", window_samples=8000)
    wav = tmp_path / "two-seconds.wav"
    soundfile.write(wav, 0.1 * np.ones(32000, np.float32), 16000)
    assert main(["score", "--model", str(card), "--device", "cpu", "--json", str(wav)]) == 0
    windows = json.loads(capsys.readouterr().out)["windows"]
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
    assert main(["score", "--model", str(card), "--device", "cpu", "--hop-s", "1.0", str(wav)]) == 2
    assert "hop_s in [0.032, 0.5] s" in capsys.readouterr().err


def test_a_symlinked_card_reads_its_files_beside_the_real_card(card: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = elsewhere / "link.toml"
    link.symlink_to(card)
    spec = load_card(link)
    assert spec.onnx_path == (card.parent / "tiny.onnx").resolve() and spec.name == "card"
    assert spec.calibration_key == load_card(card).calibration_key


def test_a_calibration_is_for_one_reading_of_the_onnx_file(card: Path, tmp_path: Path) -> None:
    """Two cards over the same file and under the same name that read it
    differently (sign, column) are different models to a calibration."""
    import dataclasses

    from spoofwatch.calibration.calfile import load_calibration, save_calibration
    from spoofwatch.errors import CalibrationError

    spec = load_card(card)
    base = load_calibration(None, model="aasist-l")
    fitted = dataclasses.replace(
        base, model="card", weights_sha256=spec.calibration_key, verdict_threshold=0.7
    )
    save_calibration(fitted, tmp_path / "fitted.toml")
    assert Detector.load(str(card), device="cpu", calibration=tmp_path / "fitted.toml").threshold == 0.7
    other = tmp_path / "other"
    other.mkdir()
    (other / "tiny.onnx").write_bytes((tmp_path / "tiny.onnx").read_bytes())
    for fields in ({"higher_is_bonafide": False}, {"bonafide_index": 0}):
        variant = _card(other, "card.toml", **fields)
        assert load_card(variant).sha256 == spec.sha256  # the same ONNX file
        with pytest.raises(CalibrationError, match="calibration was made for"):
            Detector.load(str(variant), device="cpu", calibration=tmp_path / "fitted.toml")


@pytest.mark.slow
def test_serve_scores_a_card_with_load_shedding_on(card: Path, la_dir: Path) -> None:
    """A worker times its model at start-up (load shedding) with windows of
    the card's own length, then serves 2 s windows."""
    import anyio
    from test_serve_process import server_process

    from spoofwatch.audio import read_audio
    from spoofwatch.stream.client import send_audio

    audio = np.tile(read_audio(la_clip(la_dir, BONAFIDE_UTT)), 3)[: 5 * 16000].astype(np.float32)
    with server_process(["--model", str(card), "--workers", "1"]) as server:
        url = f"ws://127.0.0.1:{server.port()}/"
        result = anyio.run(lambda: send_audio(audio, url))
        assert server.stop() == 0
        log = "\n".join(server.lines)
    assert result.close_code == 1000, result.close_reason
    scores = [e for e in result.events if e["type"] == "score"]
    assert scores and all(e["t_end"] - e["t_start"] == pytest.approx(2.0) for e in scores)
    assert result.events[-1]["type"] == "summary" and "Traceback" not in log


def test_a_card_whose_columns_follow_the_batch_is_refused(tmp_path: Path) -> None:
    """audio @ audio.T is [1, 1] for one window and [2, 2] for two: the column
    read as the score would move with the batch size. Both probes must agree."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", WINDOW])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "batch2"])
    nodes = [
        helper.make_node("Transpose", ["audio"], ["audio_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["audio", "audio_t"], ["scores"]),  # (B, B)
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "gram", [x], [out]), opset_imports=[helper.make_opsetid("", 18)]
    )
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    card = _card(tmp_path, bonafide_index=0)
    with pytest.raises(ModelError, match=r"is \[1, 1\] for a batch of 1 but \[2, 2\] for 2"):
        load_card(card)
    # Past the load check (a model may change its shape only at other batch
    # sizes), scoring names the shape instead of reading a wrong column.
    from spoofwatch.model.card import parse_card
    from spoofwatch.model.runtime import OnnxScorer

    spec = parse_card(card)
    scorer = OnnxScorer(spec.onnx_path, "cpu", 1, spec=spec)
    windows = np.full((2, WINDOW), 0.1, np.float32)
    assert scorer.scores(windows[:1]).shape == (1,)
    spec_vector = dataclasses.replace(spec, bonafide_index=None)
    with pytest.raises(ModelError, match=r"output \[\d, \d\] for a batch of \d; expected \[batch\]"):
        OnnxScorer(spec.onnx_path, "cpu", 1, spec=spec_vector).scores(windows)


def _loud_fails_model(path: Path) -> Path:
    """Output ``mean(x)`` [batch], but ONNX Runtime fails (a Reshape to rows of 3
    of a window that is not a multiple of 3) when a window's peak is above 0.05:
    a model that passes the load check on silence and fails on speech."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: object, dtype: object) -> object:
        return numpy_helper.from_array(np.array(value, dtype), name)  # type: ignore[call-overload]

    nodes = [
        helper.make_node("Abs", ["audio"], ["a"]),
        helper.make_node("ReduceMax", ["a"], ["peak"], keepdims=0),
        helper.make_node("Greater", ["peak", "thr"], ["loud"]),
        helper.make_node("Cast", ["loud"], ["n"], to=TensorProto.INT64),
        helper.make_node("Mul", ["n", "two"], ["n2"]),
        helper.make_node("Add", ["n2", "one"], ["k"]),  # 1 (quiet) or 3 (loud)
        helper.make_node("Reshape", ["k", "shape1"], ["k1"]),
        helper.make_node("Concat", ["minus1", "k1"], ["rows"], axis=0),  # [-1, k]
        helper.make_node("Reshape", ["audio", "rows"], ["r"]),  # fails for k = 3
        helper.make_node("ReduceMean", ["audio", "axes"], ["scores"], keepdims=0),  # (B,)
        helper.make_node("Identity", ["r"], ["unused"]),
    ]
    inits = [
        const("thr", 0.05, np.float32),
        const("two", 2, np.int64),
        const("one", 1, np.int64),
        const("shape1", [1], np.int64),
        const("minus1", [-1], np.int64),
        const("axes", [1], np.int64),
    ]
    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", WINDOW])
    outs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch"]),
        helper.make_tensor_value_info("unused", TensorProto.FLOAT, None),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "loud_fails", [x], outs, inits),  # type: ignore[arg-type]
        opset_imports=[helper.make_opsetid("", 18)],
    )
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_model_that_fails_on_some_audio_fails_only_that_file_or_window(
    tmp_path: Path, la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ONNX Runtime's own error on speech was a raw traceback: `score` stopped
    before the next file, `stream` after its summary, and the API raised a
    non-spoofwatch error. Now it is a ModelError naming the model, one file's
    failure in `score`, and a dropped window live."""
    import anyio

    from spoofwatch.stream.server.batcher import BatchScorer

    _loud_fails_model(tmp_path / "loud.onnx")
    card = _card(tmp_path, "loud.toml", onnx="loud.onnx", output="scores", bonafide_index=None)
    speech = _offset_speech(la_dir, tmp_path, [0.0])
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.full(2 * WINDOW, 0.01, np.float32), 16000)

    assert main(["score", "--model", str(card), "--device", "cpu", "--json", str(speech), str(quiet)]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (
        rows[0]["file"] == str(speech) and "loud.onnx: ONNX Runtime failed on a batch of" in rows[0]["error"]
    )
    assert rows[1]["score"] == pytest.approx(0.01, rel=0.01)  # the next file is scored (16-bit WAV)

    detector = Detector.load(str(card), device="cpu")
    with pytest.raises(ModelError, match=r"loud\.onnx: ONNX Runtime failed"):
        detector.score_file(speech)

    assert main(["stream", "--model", str(card), "--device", "cpu", "--json", str(speech)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    speech_windows = [e for e in events if e["type"] == "score" and e["speech"]]
    assert speech_windows and all(e["score"] is None for e in speech_windows)
    assert events[-1]["type"] == "summary" and events[-1]["dropped_windows"] == len(speech_windows)

    # The server scores streams' windows together: a window the model fails on
    # must not fail the others of its batch (another client's stream).
    loud, calm = np.full(WINDOW, 0.5, np.float32), np.full(WINDOW, 0.02, np.float32)
    batcher = BatchScorer(build_scorer(str(card), device="cpu"), max_batch_windows=4)
    got: dict[str, float] = {}

    async def run() -> None:
        async def one(name: str, window: np.ndarray) -> None:
            got[name] = await batcher.score(window)

        async with anyio.create_task_group() as tg:
            tg.start_soon(batcher.serve)
            async with anyio.create_task_group() as callers:
                callers.start_soon(one, "loud", loud)
                callers.start_soon(one, "calm", calm)
            batcher.close()

    anyio.run(run)
    assert np.isnan(got["loud"]) and got["calm"] == pytest.approx(0.02, rel=1e-4)
    assert batcher.batches == 1  # scored together, then apart


def test_the_api_refuses_a_non_finite_first_window_score(tmp_path: Path) -> None:
    """`Detector.score` returned NaN, which `verdict` called spoof, where
    `score_audio` raised."""
    _sqrt_model(tmp_path / "sqrt.onnx")
    card = _card(tmp_path, "sqrt.toml", onnx="sqrt.onnx", bonafide_index=None)
    detector = Detector.load(str(card), device="cpu")
    assert detector.score(np.full(WINDOW, 0.04, np.float32)) == pytest.approx(0.2, rel=1e-4)
    with pytest.raises(ModelError, match=r"non-finite score \(nan\) for the first window"):
        detector.score(np.full(WINDOW, -0.04, np.float32))


def test_a_model_that_fails_on_every_window_ends_the_stream(
    tmp_path: Path, la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model failing on some windows leaves the stream running (above); one
    failing on every speech window (a broken GPU session, say) left a stream
    that could never alert, with a single warning: after 20 in a row the
    stream ends with an error, a summary still last."""
    from spoofwatch.stream.engine import MAX_MODEL_FAILURES_IN_ROW

    _sqrt_model(tmp_path / "sqrt.onnx")
    card = _card(tmp_path, "sqrt.toml", onnx="sqrt.onnx", bonafide_index=None)
    negative = _offset_speech(la_dir, tmp_path, [-0.05] * 5)  # 20 s: 37 windows of 2 s, most of them speech
    code = main(["stream", "--model", str(card), "--device", "cpu", "--json", str(negative)])
    captured = capsys.readouterr()
    assert code == ModelError.exit_code
    assert f"the model failed on {MAX_MODEL_FAILURES_IN_ROW} speech windows in a row" in captured.err
    events = [json.loads(line) for line in captured.out.splitlines()]
    failed = [e for e in events if e["type"] == "score" and e["speech"] and e["score"] is None]
    assert len(failed) == MAX_MODEL_FAILURES_IN_ROW - 1  # the last one ended the stream
    assert events[-1]["type"] == "summary" and events[-1]["dropped_windows"] >= MAX_MODEL_FAILURES_IN_ROW
