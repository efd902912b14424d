"""The re-implementation reproduces the official AASIST / AASIST-L outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spoofwatch.model.aasist import AASIST, count_parameters, sinc_filterbank
from spoofwatch.model.config import load_model_config
from spoofwatch.model.export import ensure_onnx
from spoofwatch.model.runtime import OnnxScorer
from spoofwatch.model.weights import load_torch_model

MODELS = [("aasist-l", "AASIST-L", 85_306), ("aasist", "AASIST", 297_866)]


@pytest.mark.parametrize(("model", "key", "n_params"), MODELS)
def test_parameter_count(model: str, key: str, n_params: int) -> None:
    assert count_parameters(AASIST(load_model_config(model))) == n_params


@pytest.mark.parametrize(("model", "key", "n_params"), MODELS)
def test_pytorch_parity(
    sw_home: Path, reference: dict[str, np.ndarray], model: str, key: str, n_params: int
) -> None:
    net = load_torch_model(model)
    with torch.inference_mode():
        embedding, logits = net.forward_with_embedding(torch.from_numpy(reference["waveforms"]))
    assert np.abs(logits.numpy() - reference[f"{key}_logits"]).max() < 1e-4
    assert np.abs(embedding.numpy() - reference[f"{key}_embedding"]).max() < 1e-4


@pytest.mark.parametrize(("model", "key", "n_params"), MODELS)
def test_onnx_runtime_parity(
    sw_home: Path, reference: dict[str, np.ndarray], model: str, key: str, n_params: int
) -> None:
    scorer = OnnxScorer(ensure_onnx(model), device="cpu")
    assert scorer.providers == ["CPUExecutionProvider"]
    logits = scorer.logits(reference["waveforms"])
    assert logits.shape == (len(reference["names"]), 2)
    assert np.abs(logits - reference[f"{key}_logits"]).max() < 1e-3
    scores = scorer.scores(reference["waveforms"])
    np.testing.assert_allclose(scores, reference[f"{key}_logits"][:, 1], atol=1e-3)


def test_batch_size_does_not_change_scores(scorer: OnnxScorer, reference: dict[str, np.ndarray]) -> None:
    batched = scorer.scores(reference["waveforms"])
    single = np.array([scorer.scores(w)[0] for w in reference["waveforms"]])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_sinc_filters_are_band_passes() -> None:
    bank = sinc_filterbank(70, 129, 16_000).squeeze(1).numpy()
    assert bank.shape == (70, 129) and bank.dtype == np.float32
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-7)  # symmetric (linear phase)
    response = np.abs(np.fft.rfft(bank, n=4096, axis=1))
    peaks = response.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # centre frequencies rise with the filter index


def test_official_weights_load_strictly(sw_home: Path) -> None:
    net = load_torch_model("aasist-l")
    state = torch.load(Path(sw_home) / "weights" / "AASIST-L.pth", map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(state)


def test_weights_of_another_architecture_are_one_line_saying_what_to_do(tmp_path: Path) -> None:
    """AASIST weights given as AASIST-L's (or a run trained with
    [model_overrides]): torch lists every tensor; the error is one line."""
    from spoofwatch.errors import WeightsError

    path = tmp_path / "other.pth"
    torch.save(AASIST(load_model_config("aasist")).state_dict(), path)
    with pytest.raises(WeightsError) as raised:
        load_torch_model("aasist-l", path)
    message = str(raised.value)
    assert "\n" not in message and "does not fit the aasist-l architecture (size mismatch for" in message
    assert "problem(s) in all" in message and "best.onnx and a model card" in message
