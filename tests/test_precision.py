"""Precisions, the per-call batch cap, CUDA options and the refusals that
must come before any audio is read."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from spoofwatch.cli import main
from spoofwatch.errors import DeviceError, InputError, ModelError
from spoofwatch.model import runtime
from spoofwatch.model.precision import check_precision_device
from spoofwatch.model.runtime import (
    CUDA_MAX_BATCH_WINDOWS,
    CUDA_PROVIDER_OPTIONS,
    OnnxScorer,
    _nvidia_device_present,
    resolve_device,
)

no_gpu = pytest.mark.skipif(_nvidia_device_present(), reason="a GPU is present")


def _speech_windows(shared: Path, n: int) -> np.ndarray:
    from spoofwatch.audio import official_window, read_audio

    files = sorted((shared / "data" / "speech" / "bonafide" / "librispeech_test-other").glob("*.flac"))
    return np.stack([official_window(read_audio(p)) for p in files[-n:]])


def test_batch_over_the_cap_is_split_and_scores_match_one_call(onnx_aasist_l: Path, shared: Path) -> None:
    windows = _speech_windows(shared, 5)
    capped = OnnxScorer(onnx_aasist_l, "cpu", threads=2, max_batch_windows=2)
    whole = OnnxScorer(onnx_aasist_l, "cpu", threads=2, max_batch_windows=5)
    split = capped.scores(windows)
    assert capped.calls == 3  # 2 + 2 + 1
    one = whole.scores(windows)
    assert whole.calls == 1
    np.testing.assert_allclose(split, one, atol=1e-4)
    with pytest.raises(InputError, match="max_batch_windows >= 1"):
        OnnxScorer(onnx_aasist_l, "cpu", max_batch_windows=0)


def test_default_caps_and_cuda_options() -> None:
    # Derived from cuDNN's 2^31-element MaxPool limit (see runtime.py).
    assert CUDA_MAX_BATCH_WINDOWS == 64
    assert CUDA_MAX_BATCH_WINDOWS * runtime._MAXPOOL_ELEMENTS_PER_WINDOW < 2**31 // 2 + 1
    assert runtime.batch_cap("cuda:0") == 64
    assert runtime.batch_cap("cpu") == runtime.CPU_MAX_BATCH_WINDOWS
    assert CUDA_PROVIDER_OPTIONS["use_tf32"] == "0"


def test_cuda_provider_gets_tf32_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "resolve_device", lambda device: "cuda")
    cuda, cpu = runtime._providers_for("cuda")
    assert cuda == ("CUDAExecutionProvider", CUDA_PROVIDER_OPTIONS) and cpu == "CPUExecutionProvider"


@no_gpu
def test_device_auto_without_gpu_is_info_not_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="spoofwatch"):
        assert resolve_device("auto") == "cpu"
    records = [r for r in caplog.records if "no NVIDIA GPU" in r.getMessage()]
    assert records and all(r.levelno == logging.INFO for r in records)


@no_gpu
@pytest.mark.parametrize(
    ("precision", "device", "error", "message"),
    [
        ("fp16", "cpu", DeviceError, "fp16 needs the CUDA provider"),
        ("fp16", "auto", DeviceError, "fp16 needs the CUDA provider"),
        ("int8", "cuda", DeviceError, "int8 runs on the CPU provider"),
        ("bf16", "cpu", InputError, "unknown precision 'bf16'"),
    ],
)
def test_precision_device_refusals(precision: str, device: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        check_precision_device(precision, device, resolve_device)


@no_gpu
@pytest.mark.parametrize("command", ["score", "stream"])
def test_cli_refuses_fp16_on_cpu_before_reading_audio(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "never-read.wav"  # an audio error would name this file
    assert main([command, "--precision", "fp16", "--device", "cpu", str(missing)]) == 5
    err = capsys.readouterr().err
    assert "fp16 needs the CUDA provider" in err and "never-read" not in err


def test_cli_unknown_precision_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["score", "--precision", "int4", "x.wav"])
    assert exc.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err


@pytest.fixture
def private_home(onnx_aasist_l: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache holding a copy of the real FP32 export (no re-export needed)."""
    home = tmp_path / "home"
    (home / "onnx").mkdir(parents=True)
    shutil.copy(onnx_aasist_l, home / "onnx" / onnx_aasist_l.name)
    monkeypatch.setenv("SPOOFWATCH_HOME", str(home))
    return home


def _fake_variant(fp32: Path, out: Path, precision: str, source_sha256: str) -> None:
    import onnx

    from spoofwatch.model.quantize import _stamp

    model = onnx.load(str(fp32))
    _stamp(model, precision, source_sha256, [])  # type: ignore[arg-type]
    onnx.save(model, str(out))


@pytest.mark.parametrize("command", ["score", "stream"])
def test_quantized_file_from_another_fp32_source_is_refused(
    private_home: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from spoofwatch.model.export import cached_onnx_path

    fp32 = cached_onnx_path("aasist-l")
    assert fp32.is_file()
    _fake_variant(fp32, cached_onnx_path("aasist-l", precision="int8"), "int8", "f" * 64)
    missing = tmp_path / "never-read.wav"
    assert main([command, "--precision", "int8", "--device", "cpu", str(missing)]) == 4
    err = capsys.readouterr().err
    assert "was made from an FP32 graph with SHA-256 ffffffffffffffff" in err and "never-read" not in err


def test_variant_with_matching_source_loads_and_wrong_precision_is_refused(private_home: Path) -> None:
    from spoofwatch.model.export import cached_onnx_path, ensure_onnx
    from spoofwatch.model.quantize import sha256_of

    fp32 = cached_onnx_path("aasist-l")
    variant = cached_onnx_path("aasist-l", precision="int8")
    _fake_variant(fp32, variant, "int8", sha256_of(fp32))
    assert ensure_onnx("aasist-l", precision="int8") == variant
    _fake_variant(fp32, variant, "fp16", sha256_of(fp32))
    with pytest.raises(ModelError, match="expected an INT8 graph, but it records precision 'fp16'"):
        ensure_onnx("aasist-l", precision="int8")


def test_first_use_of_a_reduced_precision_builds_it(private_home: Path) -> None:
    """ensure_onnx at fp16 with no cached variant builds it from the cached FP32 export.
    (With a non-re-entrant export lock, this first use hung for ever.) In a thread, so
    that a hang fails the test instead of the suite."""
    import threading

    from spoofwatch.model.export import cached_onnx_path, ensure_onnx
    from spoofwatch.model.quantize import read_metadata

    built: list[Path] = []
    worker = threading.Thread(
        target=lambda: built.append(ensure_onnx("aasist-l", precision="fp16")), daemon=True
    )
    worker.start()
    worker.join(300)
    assert not worker.is_alive(), "ensure_onnx(precision='fp16') did not return"
    assert built == [cached_onnx_path("aasist-l", precision="fp16")]
    assert read_metadata(built[0])["spoofwatch.precision"] == "fp16"


def test_calibration_records_precision_and_a_mismatch_is_refused(
    sw_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spoofwatch.calibration.calfile import load_calibration, save_calibration

    base = load_calibration(None, model="aasist-l")
    assert base.precision == "fp32"  # files without the field are FP32
    save_calibration(dataclasses.replace(base, precision="int8"), tmp_path / "int8.toml")
    assert 'precision = "int8"' in (tmp_path / "int8.toml").read_text()
    assert load_calibration(tmp_path / "int8.toml", "aasist-l", precision="int8").precision == "int8"
    missing = tmp_path / "never-read.wav"
    args = ["score", "--device", "cpu", "--calibration", str(tmp_path / "int8.toml"), str(missing)]
    assert main(args) == 8
    err = capsys.readouterr().err
    assert "made for precision int8, but aasist-l is being scored at fp32" in err


@pytest.mark.parametrize("value", ['"int4"', '"FP32"', "8"])
def test_calibration_precision_out_of_range_is_refused_at_load(value: str, tmp_path: Path) -> None:
    from spoofwatch.calibration.calfile import dump_calibration, load_calibration
    from spoofwatch.errors import ConfigError

    text = dump_calibration(load_calibration(None, model="aasist-l"))
    assert 'precision = "fp32"\n' in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace('precision = "fp32"\n', f"precision = {value}\n"))
    with pytest.raises(ConfigError, match=r"bad\.toml: precision: expected one of fp32, int8, fp16"):
        load_calibration(path)


def test_fp16_graph_is_built_validated_and_close_to_official(
    onnx_aasist_l: Path, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    """FP16 targets CUDA; here the graph is converted, checked and run on the CPU
    provider (which upcasts), so this bounds rounding, not GPU arithmetic."""
    from spoofwatch.model.quantize import META_PRECISION, convert_fp16, read_metadata, sha256_of

    out = tmp_path / "fp16.onnx"
    kept = convert_fp16(onnx_aasist_l, out)
    assert any(k.startswith("op:TopK") for k in kept)
    meta = read_metadata(out)
    assert meta[META_PRECISION] == "fp16"
    assert meta["spoofwatch.source_sha256"] == sha256_of(onnx_aasist_l)
    half = OnnxScorer(out, "cpu", threads=2)
    rows = slice(0, 4)
    got = half.scores(reference["waveforms"][rows])
    np.testing.assert_allclose(got, reference["AASIST-L_logits"][rows, 1], atol=5e-2)


def _tiny_conv_model(path: Path) -> None:
    """``waveform [B, 64600]`` -> strided Conv1d (1->4, 65 taps) -> |.| -> mean -> MatMul -> ``logits [B, 2]``;
    plus a second Conv named like the sinc front end, which INT8 must keep in FP32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from spoofwatch.constants import WINDOW_SAMPLES

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(rng.standard_normal((4, 1, 65)).astype(np.float32), "conv_time.filters"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3)).astype(np.float32), "encoder.1.conv.weight"),
        numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "head.weight"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["waveform", "axis1"], ["x1"]),  # (B, 1, 64600)
        helper.make_node("Conv", ["x1", "conv_time.filters"], ["c1"], strides=[64], name="sinc"),  # (B, 4, T)
        helper.make_node("Abs", ["c1"], ["a1"]),
        helper.make_node(
            "Conv", ["a1", "encoder.1.conv.weight"], ["c2"], pads=[1, 1], name="enc"
        ),  # (B, 4, T)
        helper.make_node("ReduceMean", ["c2", "axis2"], ["m"], keepdims=0),  # (B, 4)
        helper.make_node("MatMul", ["m", "head.weight"], ["logits"]),  # (B, 2)
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_conv",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", WINDOW_SAMPLES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_int8_quantization_keeps_listed_layers_fp32_and_stamps_its_source(
    tmp_path: Path, shared: Path
) -> None:
    import onnx

    from spoofwatch.model.quantize import check_source, quantize_int8, read_metadata, sha256_of

    src, out = tmp_path / "tiny.onnx", tmp_path / "tiny-int8.onnx"
    _tiny_conv_model(src)
    windows = _speech_windows(shared, 3)
    delta = quantize_int8(src, out, windows, fp32_layers=("conv_time",))
    check_source(out, src, "int8")  # records this FP32 file's hash
    graph = onnx.load(str(out)).graph
    quantized_weights = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert any(w.startswith("encoder.1.conv.weight") for w in quantized_weights)
    assert not any(w.startswith("conv_time") for w in quantized_weights)
    a, b = OnnxScorer(src, "cpu"), OnnxScorer(out, "cpu")
    assert delta == pytest.approx(float(np.max(np.abs(a.scores(windows) - b.scores(windows)))), abs=1e-6)
    assert delta > 0  # really quantized
    _tiny_conv_model(src)  # same graph, but any byte change in the source must be refused:
    model = onnx.load(str(src))
    model.doc_string = "re-exported"
    onnx.save(model, str(src))
    assert sha256_of(src) != read_metadata(out)["spoofwatch.source_sha256"]
    with pytest.raises(ModelError, match="was made from an FP32 graph"):
        check_source(out, src, "int8")
