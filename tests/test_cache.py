"""The model cache vouches for its files: a graph changed since spoofwatch
wrote it is refused, one from an earlier release is exported again, and
``export --out`` cannot write into the cache or over the weights in use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import BONAFIDE_UTT, la_clip

from spoofwatch.cli import main
from spoofwatch.errors import ModelError
from spoofwatch.model.cached import Cached, check, digest_path, file_sha256


@pytest.fixture
def own_home(sw_home: Path, onnx_aasist_l: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the session's cache (weights and the FP32 export), to damage."""
    home = tmp_path / "home"
    shutil.copytree(sw_home / "weights", home / "weights")
    (home / "onnx").mkdir()
    for path in (onnx_aasist_l, digest_path(onnx_aasist_l)):
        shutil.copy2(path, home / "onnx" / path.name)
    monkeypatch.setenv("SPOOFWATCH_HOME", str(home))
    return home


def test_a_cached_graph_changed_in_place_is_refused(
    own_home: Path, onnx_aasist_l: Path, la_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows of the output layer swapped in the cached graph (same size, still
    a valid graph) inverted every verdict, exit 0."""
    from spoofwatch.model.export import ensure_onnx

    cached = own_home / "onnx" / onnx_aasist_l.name
    assert ensure_onnx("aasist-l") == cached and check(cached) is Cached.INTACT
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit in the weights
    cached.write_bytes(bytes(data))
    with pytest.raises(
        ModelError, match=r"changed since spoofwatch wrote it .* delete it and the next run rebuilds"
    ):
        ensure_onnx("aasist-l")
    assert main(["score", "--device", "cpu", str(la_clip(la_dir, BONAFIDE_UTT))]) == ModelError.exit_code
    assert "this cached model file changed since spoofwatch wrote it" in capsys.readouterr().err
    cached.unlink()  # as the message says: the next run rebuilds it
    assert ensure_onnx("aasist-l") == cached and file_sha256(cached) == file_sha256(onnx_aasist_l)


def test_a_cached_graph_without_a_digest_is_exported_again(own_home: Path, onnx_aasist_l: Path) -> None:
    """An earlier release's cache has no digests: its graphs cannot be vouched
    for, so they are exported again (the export is deterministic)."""
    from spoofwatch.model.export import ensure_onnx

    cached = own_home / "onnx" / onnx_aasist_l.name
    digest_path(cached).unlink()
    cached.write_bytes(b"not the graph it claims to be")
    assert check(cached) is Cached.UNRECORDED
    assert ensure_onnx("aasist-l") == cached
    assert check(cached) is Cached.INTACT and file_sha256(cached) == file_sha256(onnx_aasist_l)


def test_export_out_refuses_the_cache_and_the_weights_in_use(
    own_home: Path, onnx_aasist_l: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`export --out` into the cache replaced a cached graph (another model's,
    or FP16 in the FP32 slot, was then scored as the slot's name says), and
    over the weights in use destroyed them."""
    from spoofwatch.model.weights import packaged_weights_dir

    weights = own_home / "weights" / "AASIST-L.pth"
    before = file_sha256(weights)
    cases = [
        (weights, "is the weights in use file itself"),
        (own_home / "onnx" / onnx_aasist_l.name, "inside spoofwatch's cache"),
        (own_home / "elsewhere.onnx", "inside spoofwatch's cache"),
        (packaged_weights_dir() / "mine.onnx", "inside spoofwatch's package"),
    ]
    for out, message in cases:
        assert main(["export", "--out", str(out)]) == 2, out
        assert message in capsys.readouterr().err
    assert file_sha256(weights) == before and not (packaged_weights_dir() / "mine.onnx").exists()
    assert check(own_home / "onnx" / onnx_aasist_l.name) is Cached.INTACT


def test_export_into_the_cache_records_the_digest(own_home: Path, onnx_aasist_l: Path) -> None:
    """`spoofwatch export` (no --out) installed its graph without a digest:
    the next use took it for an earlier release's and exported it again."""
    cached = own_home / "onnx" / onnx_aasist_l.name
    cached.unlink()
    digest_path(cached).write_text("0" * 64 + "\n")  # a stale digest: the file was deleted by hand
    assert main(["export"]) == 0
    assert check(cached) is Cached.INTACT


def test_a_replacement_that_dies_half_way_leaves_no_digest_to_refuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old digest goes first and the new one comes last: a run killed in
    between leaves a file without one (exported again, or recorded), never a
    digest that refuses a good file for ever."""
    from spoofwatch.model import cached as cache

    final = tmp_path / "graph.onnx"
    final.write_bytes(b"old")
    cache.record(final)
    new = tmp_path / "new.tmp"
    new.write_bytes(b"new")

    def dies(path: Path, digest: str | None = None) -> None:
        raise KeyboardInterrupt  # killed after the rename, before the digest

    monkeypatch.setattr(cache, "record", dies)
    with pytest.raises(KeyboardInterrupt):
        cache.install(new, final)
    monkeypatch.undo()
    assert final.read_bytes() == b"new" and check(final) is Cached.UNRECORDED
